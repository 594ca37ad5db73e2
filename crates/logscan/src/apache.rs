//! Apache httpd 2.4 `error_log` lines, default `ErrorLogFormat`.
//!
//! The shape is `[Www Mmm dd hh:mm:ss.uuuuuu yyyy] [module:level] [pid P:tid T] (errno)Text:
//! [client IP:PORT] AHnnnnn: message[, referer: URL]`. The AH code names the message; the APR
//! status in parentheses says why (`(111)Connection refused`, `(70007)The timeout specified has
//! expired`). Several modules log one failure on consecutive lines of the same thread: the line
//! with the reason first, then summaries (`AH01114`, `AH00898`); those become follow-ups.

use cause::{Cause, Phase};

use crate::bytes::after;
use crate::time::{self, digits};
use crate::{hash, Finding, Format, Line, Relayed, Role, State};

pub fn parse<'a>(line: &'a [u8], state: &mut State) -> Line<'a> {
    let Some(close) = memchr::memchr(b']', line) else {
        return Line::Skipped(None);
    };
    let when = timestamp(&line[1..close]);
    let mut rest = line.get(close + 1..).unwrap_or_default();
    let mut level: &[u8] = b"";
    let mut thread: &[u8] = b"";
    let mut client = None;
    let mut remote = None;
    // Bracketed fields in any order, then the optional APR status, then maybe `[client ...]`.
    loop {
        rest = trim_start(rest);
        if let Some(inner) = rest.strip_prefix(b"[") {
            let end = memchr::memchr(b']', inner).unwrap_or(inner.len());
            let field = &inner[..end];
            if let Some(c) = field.strip_prefix(b"client ") {
                client = Some(c);
            } else if let Some(r) = field.strip_prefix(b"remote ") {
                remote = Some(r);
            } else if field.starts_with(b"pid ") {
                thread = field;
            } else if let Some(colon) = memchr::memrchr(b':', field) {
                level = &field[colon + 1..];
            }
            rest = inner.get(end + 1..).unwrap_or_default();
        } else {
            break;
        }
    }
    // `(111)Connection refused: ` before the message (and before `[client ...]`).
    let mut errno: Option<u32> = None;
    if rest.first() == Some(&b'(') {
        if let Some(end) = memchr::memchr(b')', rest) {
            errno = digits(&rest[1..end]);
            if let Some(i) = find!(rest, b": ") {
                rest = &rest[i + 2..];
            }
            if let Some(c) = rest.strip_prefix(b"[client ") {
                let end = memchr::memchr(b']', c).unwrap_or(c.len());
                client = Some(&c[..end]);
                rest = trim_start(c.get(end + 1..).unwrap_or_default());
            }
        }
    }
    let msg = rest;
    let code = if msg.len() >= 8 && msg.starts_with(b"AH") && msg[7] == b':' {
        digits(&msg[2..7])
    } else {
        None
    };
    let Some(mut f) = code.and_then(|c| classify(c, errno, msg)) else {
        if let Some(detail) = code.and_then(|c| relayed(c, msg)) {
            return Line::Relayed(Relayed {
                format: Format::Apache,
                detail,
                time: when,
                status: None,
                upstream: None,
            });
        }
        return match level {
            b"error" | b"crit" | b"alert" | b"emerg" => Line::Unrecognized(Format::Apache),
            _ => Line::Skipped(Some(Format::Apache)),
        };
    };
    f.time = when;
    f.client = client.map(strip_port);
    if f.upstream.is_none() {
        f.upstream = remote;
    }
    // Lines of one thread about one failure: a summary line right after the reason is a
    // follow-up; without the reason before it, it is the only trace and counts.
    let key = hash(thread);
    if f.role == Role::FollowUp && !state.continues(key, f.time) {
        f.role = Role::Request;
        state.remember(key, f.time);
    } else if f.role == Role::Request {
        state.remember(key, f.time);
    }
    Line::Finding(f)
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| **c == b' ').count();
    &b[n..]
}

/// `203.0.113.7:51234` -> `203.0.113.7`; `[::1]:5555` -> `[::1]`.
fn strip_port(b: &[u8]) -> &[u8] {
    match memchr::memrchr(b':', b) {
        Some(i) if b[i + 1..].iter().all(u8::is_ascii_digit) && !b[..i].ends_with(b":") => &b[..i],
        _ => b,
    }
}

/// `Wed May 01 10:00:03.114502 2024`.
fn timestamp(b: &[u8]) -> Option<time::Millis> {
    if b.len() < 24 {
        return None;
    }
    let month = time::month(&b[4..7])?;
    let day = digits(b[8..10].trim_ascii_start())?;
    let (h, m, s) = time::hms(&b[11..19])?;
    let (ms, year_at) = if b[19] == b'.' {
        let sp = memchr::memchr(b' ', &b[20..])? + 20;
        (time::fraction_ms(&b[20..sp]), sp + 1)
    } else {
        (0, 20)
    };
    let year = digits(b.get(year_at..year_at + 4)?)?;
    time::make(year, month, day, h, m, s, ms)
}

/// The first word after `key`, without a trailing comma.
fn word_after<'a>(msg: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let w = after(msg, key, b' ')?;
    Some(w.strip_suffix(b",").unwrap_or(w))
}

const TIMEDOUT: u32 = 70007;
const EOF: u32 = 70014;
const EGENERAL: u32 = 20014;
/// APR_INCOMPLETE: "Partial results are valid but processing is incomplete".
const PARTIAL: u32 = 70008;

fn connect_errno(errno: Option<u32>) -> (Cause, &'static str) {
    match errno {
        Some(111) => (Cause::Refused, "connection refused"),
        Some(110) | Some(TIMEDOUT) => (Cause::Timeout, "connect timed out"),
        Some(113) | Some(101) | Some(112) => (Cause::Unreachable, "no route"),
        Some(99) => (Cause::LocalExhausted, "no free local port"),
        Some(104) => (Cause::Reset, "reset while connecting"),
        Some(24) => (Cause::LocalExhausted, "file descriptors exhausted"),
        _ => (Cause::Unreachable, "connect failed"),
    }
}

fn classify(code: u32, errno: Option<u32>, msg: &[u8]) -> Option<Finding<'_>> {
    use Cause::*;
    let f = |rule, cause, phase| Finding::new(Format::Apache, rule, cause, phase);
    let mut x = match code {
        957 => {
            let (cause, detail) = connect_errno(errno);
            let mut x = f("apache.AH00957", cause, Phase::Connect).detail(detail);
            x.upstream = word_after(msg, b"attempt to connect to ");
            x.status = Some(503);
            x
        }
        2454 => {
            let (cause, detail) = match errno {
                Some(2) => (Refused, "unix socket missing"),
                Some(13) => (Refused, "unix socket permission denied"),
                Some(11) => (Refused, "unix socket backlog full"),
                _ => (Refused, "unix socket: nothing listening"),
            };
            let mut x = f("apache.AH02454", cause, Phase::Connect).detail(detail);
            x.upstream = word_after(msg, b"Unix domain socket ");
            x.status = Some(503);
            x
        }
        959 => f("apache.AH00959", NoHealthyUpstream, Phase::Select)
            .detail("worker disabled after failure")
            .role(Role::FollowUp),
        940 => {
            let mut x = f("apache.AH00940", NoHealthyUpstream, Phase::Select)
                .detail("worker in retry window")
                .role(Role::FollowUp);
            x.upstream = after!(msg, b"disabled connection for (", b')');
            x.status = Some(503);
            x
        }
        1114 | 1079 => {
            let mut x = f(
                if code == 1114 {
                    "apache.AH01114"
                } else {
                    "apache.AH01079"
                },
                Refused,
                Phase::Connect,
            )
            .detail("failed to make connection")
            .role(Role::FollowUp);
            x.status = Some(503);
            x
        }
        1102 => {
            let (cause, detail) = match errno {
                Some(TIMEDOUT) => (Timeout, ""),
                Some(104) => (Reset, ""),
                Some(EOF) => (Closed, ""),
                // httpd 2.4.67 writes APR_EGENERAL here when a plain HTTP upstream closes
                // without a byte; a failed TLS handshake shows up on AH01084 instead.
                Some(EGENERAL) => (Closed, "closed before the status line"),
                _ => (Closed, ""),
            };
            let mut x = f("apache.AH01102", cause, Phase::ReadHead).detail(detail);
            x.upstream = word_after(msg, b"from remote server ");
            x.status = Some(502);
            x
        }
        898 => {
            let mut x = if has!(msg, b"DNS lookup failure for: ") {
                let mut x = f("apache.AH00898_dns", Dns, Phase::Resolve).detail("name not found");
                x.upstream = word_after(msg, b"DNS lookup failure for: ");
                x
            } else if has!(msg, b"Error during SSL Handshake") {
                f("apache.AH00898_ssl_handshake", Tls, Phase::TlsHandshake)
                    .detail("handshake failed")
                    .role(Role::FollowUp)
            } else if has!(msg, b"Corrupt status line") {
                f(
                    "apache.AH00898_corrupt_status",
                    InvalidResponse,
                    Phase::ReadHead,
                )
                .detail("invalid status line")
            } else if has!(msg, b"Timeout on 100-Continue") {
                f("apache.AH00898_100_continue", Timeout, Phase::ReadHead)
                    .detail("100-continue timed out")
            } else if has!(msg, b"Error reading from remote server") {
                f("apache.AH00898_read_error", Closed, Phase::ReadHead).role(Role::FollowUp)
            } else {
                return None;
            };
            x.request = after!(msg, b" returned by ", b',');
            x.status = Some(502);
            x
        }
        10124 => f("apache.AH10124", ResponseTooLarge, Phase::ReadHead),
        // `Error reading headers from backend`, then AH01106 for the same request.
        10404 => match errno {
            Some(TIMEDOUT) => f("apache.AH10404", Timeout, Phase::ReadHead),
            Some(104) => f("apache.AH10404", Reset, Phase::ReadHead),
            _ => f("apache.AH10404", Closed, Phase::ReadHead).detail("closed inside the header"),
        },
        1106 => f("apache.AH01106", InvalidResponse, Phase::ReadHead)
            .detail("invalid header")
            .role(Role::FollowUp),
        1110 => match errno {
            Some(TIMEDOUT) => f("apache.AH01110", Timeout, Phase::ReadBody),
            Some(EOF) | Some(PARTIAL) => f("apache.AH01110", Closed, Phase::ReadBody),
            Some(EGENERAL) => {
                f("apache.AH01110", InvalidResponse, Phase::ReadBody).detail("invalid framing")
            }
            _ => f("apache.AH01110", Reset, Phase::ReadBody),
        },
        1075 => {
            let (cause, status) = match errno {
                Some(TIMEDOUT) => (Timeout, 504),
                Some(104) => (Reset, 503),
                _ => (Closed, 503),
            };
            // A summary of the FastCGI exchange: after AH01068 and friends it is their follow-up.
            let mut x = f("apache.AH01075", cause, Phase::ReadHead)
                .detail("fastcgi (php-fpm)")
                .role(Role::FollowUp);
            x.status = Some(status);
            x
        }
        1067 => f("apache.AH01067", Closed, Phase::ReadHead).detail("fastcgi (php-fpm)"),
        1068 => f("apache.AH01068", InvalidResponse, Phase::ReadHead)
            .detail("not FastCGI (protocol mismatch)"),
        1084 => {
            let mut x = match errno {
                Some(EGENERAL) | Some(502) => {
                    f("apache.AH01084_ssl", Tls, Phase::TlsHandshake).detail("handshake failed")
                }
                Some(TIMEDOUT) => f("apache.AH01084", Timeout, Phase::SendRequest),
                _ => f("apache.AH01084", Reset, Phase::SendRequest),
            };
            x.upstream = word_after(msg, b"pass request body failed to ");
            x
        }
        1097 => f("apache.AH01097", Reset, Phase::SendRequest).role(Role::FollowUp),
        1167 | 1170 => {
            let mut x = f("apache.AH01170", NoHealthyUpstream, Phase::Select)
                .detail("all balancer members in error state");
            x.status = Some(503);
            x
        }
        1171 => {
            f("apache.AH01171", NoHealthyUpstream, Phase::Select).detail("balancer has no members")
        }
        934 => f("apache.AH00934", Overloaded, Phase::Queue).detail("all workers busy"),
        941 => {
            f("apache.AH00941", LocalExhausted, Phase::Connect).detail("connection pool exhausted")
        }
        484 | 286 | 161 => f("apache.AH00484", LocalExhausted, Phase::Client)
            .detail("MaxRequestWorkers reached")
            .role(Role::Event),
        1144 | 961 | 1961 => {
            f("apache.misconfiguration", Internal, Phase::Select).detail("proxy misconfiguration")
        }
        2039 => f("apache.AH02039", Tls, Phase::TlsHandshake).detail("certificate verify failed"),
        2005 | 2411 => {
            f("apache.AH02005", Tls, Phase::TlsHandshake).detail("certificate name mismatch")
        }
        _ => return None,
    };
    if x.status.is_none() && x.phase != Phase::ReadBody && x.role != Role::Event {
        x.status = Some(match x.cause {
            Timeout => 504,
            NoHealthyUpstream | Overloaded | LocalExhausted => 503,
            Tls => 500,
            _ => 502,
        });
    }
    Some(x)
}

/// PHP-FPM's stderr relayed by mod_proxy_fcgi.
fn relayed(code: u32, msg: &[u8]) -> Option<&'static str> {
    if code != 1071 {
        return None;
    }
    Some(
        if has!(msg, b"Primary script unknown") || has!(msg, b"Unable to open primary") {
            "php-fpm: primary script unknown (404)"
        } else if has!(msg, b"Access to the script") {
            "php-fpm: script extension denied (403)"
        } else if has!(msg, b"PHP Fatal error") {
            "php fatal error (500)"
        } else {
            "php-fpm stderr message"
        },
    )
}
