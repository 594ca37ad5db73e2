//! nginx `error.log` lines (also OpenResty and ingress-nginx).
//!
//! The shape is `YYYY/MM/DD HH:MM:SS [level] PID#TID: *CONN message[ while ACTION], client: IP,
//! server: NAME, request: "LINE", upstream: "URL", host: "HOST"`. The message names what failed,
//! the errno text in parentheses says how, and the `while ...` action names the phase. Facts
//! about these texts are in docs/logs.md; the order of the checks below matters, specific first.

use cause::{Cause, Phase};

use crate::bytes::endpoint_of_url;
use crate::time::{self, digits};
use crate::{hash, Finding, Format, Line, Relayed, Role, State};

pub fn parse<'a>(line: &'a [u8], state: &mut State) -> Line<'a> {
    let Some(when) = line
        .get(..19)
        .and_then(|raw| state.stamp(raw, |_| timestamp(line)))
    else {
        return Line::Skipped(None);
    };
    let rest = &line[19..];
    let Some(rest) = rest.strip_prefix(b" [") else {
        return Line::Skipped(Some(Format::Nginx));
    };
    let Some(close) = memchr::memchr(b']', rest) else {
        return Line::Skipped(Some(Format::Nginx));
    };
    let level = &rest[..close];
    // nginx writes no upstream or client failure at these levels.
    if level == b"notice" || level == b"debug" {
        return Line::Skipped(Some(Format::Nginx));
    }
    let mut msg = rest.get(close + 2..).unwrap_or_default();
    // `PID#TID: ` then, for request-bound lines, `*CONN `.
    if let Some(sp) = memchr::memchr(b' ', msg) {
        if sp > 0 && msg[sp - 1] == b':' && msg[..sp].contains(&b'#') {
            msg = &msg[sp + 1..];
        }
    }
    let mut conn: &[u8] = b"";
    if msg.first() == Some(&b'*') {
        let end = memchr::memchr(b' ', msg).unwrap_or(msg.len());
        conn = &msg[..end];
        msg = msg.get(end + 1..).unwrap_or_default();
    }
    // The context fields follow the message; a message never contains ", client: ". Commas
    // are rare in messages, so stepping from comma to comma beats a substring search.
    let mut at = 0;
    let split = loop {
        match memchr::memchr(b',', &msg[at..]) {
            Some(i) if msg[at + i..].starts_with(b", client: ") => break Some(at + i),
            Some(i) => at += i + 1,
            None => break None,
        }
    };
    let (text, ctx) = match split {
        Some(i) => (&msg[..i], &msg[i..]),
        None => (msg, &b""[..]),
    };
    let Some(mut f) = classify(text) else {
        if let Some(detail) = relayed(text) {
            return Line::Relayed(Relayed {
                format: Format::Nginx,
                detail,
                time: Some(when),
                status: None,
                upstream: Context::of(ctx).upstream.map(endpoint_of_url),
            });
        }
        return match level {
            b"error" | b"crit" | b"alert" | b"emerg" => Line::Unrecognized(Format::Nginx),
            _ => Line::Skipped(Some(Format::Nginx)),
        };
    };
    f.time = Some(when);
    let c = Context::of(ctx);
    f.client = c.client;
    f.host = c.host;
    f.request = c.request;
    if f.upstream.is_none() {
        f.upstream = c.upstream.map(endpoint_of_url);
    }
    // Several lines for one connection are the same request: later ones about the same
    // failure (a server marked down because of it) are follow-ups.
    let key = hash(conn);
    if f.role == Role::FollowUp && !(conn.is_empty() || state.continues(key, f.time)) {
        f.role = Role::Event;
    }
    if f.role == Role::Request && !conn.is_empty() {
        state.remember(key, f.time);
    }
    Line::Finding(f)
}

/// The fields nginx appends to a request's error: `, client: IP, server: NAME, request: "LINE",
/// upstream: "URL", host: "HOST"`, read in one pass.
#[derive(Default)]
struct Context<'a> {
    client: Option<&'a [u8]>,
    request: Option<&'a [u8]>,
    upstream: Option<&'a [u8]>,
    host: Option<&'a [u8]>,
}

impl<'a> Context<'a> {
    fn of(mut rest: &'a [u8]) -> Context<'a> {
        let mut c = Context::default();
        while let Some(r) = rest.strip_prefix(b", ") {
            // The keys nginx writes are few and known: compare them rather than search.
            let key = |k: &[u8]| r.starts_with(k).then_some(k.len());
            let (known, len) = match r.first() {
                Some(b'c') => (0, key(b"client: ")),
                Some(b'r') => (1, key(b"request: ")),
                Some(b'u') => (2, key(b"upstream: ")),
                Some(b'h') => (3, key(b"host: ")),
                _ => (4, None),
            };
            let (known, skip) = match len {
                Some(n) => (known, n),
                None => match memchr::memchr(b':', r) {
                    Some(colon) => (4, colon + 2),
                    None => break,
                },
            };
            let Some(v) = r.get(skip..) else { break };
            let value;
            if let Some(q) = v.strip_prefix(b"\"") {
                let end = memchr::memchr(b'"', q).unwrap_or(q.len());
                value = &q[..end];
                rest = q.get(end + 1..).unwrap_or_default();
            } else {
                let end = memchr::memchr(b',', v).unwrap_or(v.len());
                value = &v[..end];
                rest = &v[end..];
            }
            match known {
                0 => c.client = Some(value),
                1 => c.request = Some(value),
                2 => c.upstream = Some(value),
                3 => c.host = Some(value),
                _ => {}
            }
        }
        c
    }
}

fn timestamp(b: &[u8]) -> Option<time::Millis> {
    if b.len() < 20 || b[4] != b'/' || b[7] != b'/' || b[10] != b' ' {
        return None;
    }
    let (h, m, s) = time::hms(&b[11..19])?;
    time::make(
        digits(&b[0..4])?,
        digits(&b[5..7])?,
        digits(&b[8..10])?,
        h,
        m,
        s,
        0,
    )
}

/// The phase named by the `while ...` action at the end of the message.
fn phase_of(text: &[u8], default: Phase) -> Phase {
    // Messages hold one ` while `; `w` is rare enough in them to step from one to the next.
    let Some(i) = memchr::memchr_iter(b'w', text)
        .find(|&i| i > 0 && text[i - 1] == b' ' && text[i..].starts_with(b"while "))
        .map(|i| i - 1)
    else {
        return default;
    };
    let action = &text[i + 7..];
    if action.starts_with(b"connecting to upstream") {
        Phase::Connect
    } else if action.starts_with(b"SSL handshaking to upstream") {
        Phase::TlsHandshake
    } else if action.starts_with(b"sending request to upstream") {
        Phase::SendRequest
    } else if action.starts_with(b"reading response header from upstream") {
        Phase::ReadHead
    } else if action.starts_with(b"reading upstream") {
        Phase::ReadBody
    } else if action.starts_with(b"proxying upgraded connection") {
        Phase::Upgrade
    } else if has!(action, b"client") {
        Phase::Client
    } else {
        default
    }
}

/// The strerror text inside `failed (NN: TEXT)` or `timed out (NN: TEXT)`.
fn errno_text(text: &[u8]) -> &[u8] {
    // `failed (111: Connection refused)`: the first ` (` starts it (`connect()` has no space).
    let Some(open) = memchr::memchr_iter(b'(', text).find(|&i| i > 0 && text[i - 1] == b' ') else {
        return b"";
    };
    let inner = &text[open + 1..];
    let inner = &inner[..memchr::memchr(b')', inner).unwrap_or(inner.len())];
    match memchr::memchr(b':', inner) {
        Some(i) => inner[i + 1..].trim_ascii_start(),
        None => inner,
    }
}

/// The first words of the frequent messages. Knowing them, `classify` runs only the checks of
/// that message instead of searching the line for every other one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lead {
    TimedOut,
    Connect,
    Closed,
    Io,
    NoLive,
    Disabled,
    Sent,
    Ssl,
    Client,
    /// Frequent and never a gateway error (a response buffered to a temporary file).
    Harmless,
    Other,
}

fn lead(text: &[u8]) -> Lead {
    if text.starts_with(b"upstream timed out") {
        Lead::TimedOut
    } else if text.starts_with(b"connect() ") {
        Lead::Connect
    } else if text.starts_with(b"upstream prematurely closed") {
        Lead::Closed
    } else if [
        &b"recv()"[..],
        b"readv()",
        b"writev()",
        b"send()",
        b"sendfile()",
        b"SSL_read()",
        b"SSL_write()",
    ]
    .iter()
    .any(|p| text.starts_with(p))
    {
        Lead::Io
    } else if text.starts_with(b"no live upstreams") {
        Lead::NoLive
    } else if text.starts_with(b"upstream server temporarily disabled") {
        Lead::Disabled
    } else if text.starts_with(b"upstream sent") || text.starts_with(b"upstream rejected") {
        Lead::Sent
    } else if text.starts_with(b"SSL_do_handshake()") || text.starts_with(b"upstream SSL") {
        Lead::Ssl
    } else if text.starts_with(b"client ") || text.starts_with(b"epoll_wait() reported that client")
    {
        Lead::Client
    } else if text.starts_with(b"an upstream response is buffered")
        || text.ends_with(b"closed keepalive connection")
    {
        Lead::Harmless
    } else {
        Lead::Other
    }
}

fn classify(text: &[u8]) -> Option<Finding<'_>> {
    let lead = lead(text);
    if lead == Lead::Harmless {
        return None;
    }
    if lead != Lead::Other {
        if let Some(f) = classify_as(text, lead) {
            return Some(f);
        }
    }
    classify_as(text, Lead::Other)
}

/// The checks in order, specific first; with a known `lead`, only that message's checks.
fn classify_as(text: &[u8], lead: Lead) -> Option<Finding<'_>> {
    use Cause::*;
    let f = |rule, cause, phase| Finding::new(Format::Nginx, rule, cause, phase);
    let may = |l: Lead| lead == l || lead == Lead::Other;
    let other = lead == Lead::Other;
    if lead == Lead::TimedOut || (other && has!(text, b"upstream timed out")) {
        let phase = phase_of(text, Phase::ReadHead);
        let rule = match phase {
            Phase::Connect => "nginx.connect_timeout",
            Phase::TlsHandshake => "nginx.tls_handshake_timeout",
            Phase::SendRequest => "nginx.send_timeout",
            Phase::ReadBody => "nginx.read_body_timeout",
            _ => "nginx.read_header_timeout",
        };
        let mut x = f(rule, Timeout, phase);
        x.status = (phase != Phase::ReadBody).then_some(504);
        return Some(x);
    }
    let connect = match lead {
        Lead::Connect => Some(0),
        Lead::Other => find!(text, b"connect() "),
        _ => None,
    };
    if let Some(at) = connect {
        let call = &text[at..];
        if has!(call, b"failed (") {
            let unix = call.starts_with(b"connect() to unix:");
            let upstream = if unix || call.starts_with(b"connect() to ") {
                let peer = &call[13..];
                let end = find!(peer, b" failed").unwrap_or(peer.len());
                Some(&peer[..end])
            } else {
                None
            };
            let err = errno_text(call);
            let (rule, cause, detail) = connect_error(err, unix)?;
            let mut x = f(rule, cause, Phase::Connect).detail(detail);
            x.upstream = upstream;
            x.status = Some(502);
            if cause == LocalExhausted && !has!(err, b"assign") {
                x.status = Some(500);
            }
            return Some(x);
        }
    }
    if may(Lead::NoLive) && has!(text, b"no live upstreams") {
        let mut x = f("nginx.no_live_upstreams", NoHealthyUpstream, Phase::Select);
        x.status = Some(502);
        return Some(x);
    }
    if may(Lead::Disabled) && has!(text, b"upstream server temporarily disabled") {
        return Some(
            f(
                "nginx.server_temporarily_disabled",
                NoHealthyUpstream,
                Phase::Select,
            )
            .detail("server marked down after failures")
            .role(Role::FollowUp),
        );
    }
    if lead == Lead::Closed || (other && has!(text, b"upstream prematurely closed")) {
        let phase = phase_of(text, Phase::ReadHead);
        let fastcgi = has!(text, b"FastCGI");
        let mut x = f(
            if fastcgi {
                "nginx.fastcgi_closed"
            } else if phase == Phase::ReadBody {
                "nginx.premature_close_body"
            } else {
                "nginx.premature_close_header"
            },
            Closed,
            phase,
        );
        if fastcgi {
            x.detail = "fastcgi (php-fpm)";
        }
        x.status = (phase != Phase::ReadBody).then_some(502);
        return Some(x);
    }
    if may(Lead::Sent) && has!(text, b"upstream sent too big header") {
        let mut x = f("nginx.too_big_header", ResponseTooLarge, Phase::ReadHead);
        x.status = Some(502);
        return Some(x);
    }
    if may(Lead::Sent) && has!(text, b"upstream sent no valid HTTP/1.0 header") {
        return Some(
            f(
                "nginx.no_valid_http_header",
                InvalidResponse,
                Phase::ReadHead,
            )
            .detail("not HTTP (protocol mismatch)"),
        );
    }
    if may(Lead::Sent) && has!(text, b"upstream sent unsupported FastCGI protocol version") {
        let mut x = f(
            "nginx.fastcgi_unsupported_version",
            InvalidResponse,
            Phase::ReadHead,
        )
        .detail("not FastCGI (protocol mismatch)");
        x.status = Some(502);
        return Some(x);
    }
    if may(Lead::Sent)
        && has!(text, b"upstream sent")
        && (has!(text, b"invalid")
            || has!(text, b"unexpected FastCGI")
            || has!(text, b"Content-Length")
            || has!(text, b"duplicate header")
            || has!(text, b"more data than specified"))
    {
        let phase = phase_of(text, Phase::ReadHead);
        let chunked = has!(text, b"chunked");
        let mut x = f(
            if chunked {
                "nginx.invalid_chunked"
            } else if has!(text, b"FastCGI") {
                "nginx.fastcgi_bad_record"
            } else {
                "nginx.invalid_header"
            },
            InvalidResponse,
            phase,
        );
        x.detail = if chunked {
            "invalid chunked framing"
        } else if has!(text, b"FastCGI") {
            "invalid fastcgi record"
        } else {
            "invalid header"
        };
        x.status = (phase != Phase::ReadBody).then_some(502);
        return Some(x);
    }
    if may(Lead::Ssl) && has!(text, b"upstream SSL certificate verify error") {
        return Some(
            f("nginx.ssl_cert_verify", Tls, Phase::TlsHandshake)
                .detail("certificate verify failed"),
        );
    }
    if may(Lead::Ssl) && has!(text, b"upstream SSL certificate does not match") {
        return Some(
            f("nginx.ssl_cert_verify", Tls, Phase::TlsHandshake)
                .detail("certificate name mismatch"),
        );
    }
    if may(Lead::Ssl)
        && (has!(text, b"SSL_do_handshake() failed")
            || has!(text, b"peer closed connection in SSL handshake"))
        && has!(text, b"to upstream")
    {
        let plain = has!(text, b"wrong version number") || has!(text, b"WRONG_VERSION");
        let mut x = f(
            if plain {
                "nginx.ssl_wrong_version"
            } else {
                "nginx.ssl_handshake_failed"
            },
            Tls,
            Phase::TlsHandshake,
        )
        .detail(if plain {
            "plain HTTP on the TLS port"
        } else {
            "handshake failed"
        });
        x.status = Some(502);
        return Some(x);
    }
    if may(Lead::Sent) && has!(text, b"upstream rejected request with error") {
        return Some(
            f("nginx.grpc_rejected", Reset, Phase::ReadHead).detail("http/2 stream rejected"),
        );
    }
    // recv()/send() failures: the upstream's side or the client's, by the action.
    if may(Lead::Io)
        && has!(text, b"() failed (")
        && (has!(text, b"Connection reset by peer") || has!(text, b"Broken pipe"))
    {
        let phase = phase_of(text, Phase::ReadHead);
        if phase == Phase::Client || !has!(text, b"upstream") {
            return Some(f("nginx.client_reset", ClientAborted, Phase::Client));
        }
        let mut x = f(
            match phase {
                Phase::SendRequest => "nginx.reset_sending",
                Phase::ReadBody => "nginx.reset_reading_body",
                _ => "nginx.reset_reading_header",
            },
            Reset,
            phase,
        );
        x.status = (phase != Phase::ReadBody).then_some(502);
        return Some(x);
    }
    if other && has!(text, b" could not be resolved (") {
        let mut x =
            f("nginx.resolve_failed", Dns, Phase::Resolve).detail(dns_detail(errno_text(text)));
        x.status = Some(502);
        x.upstream = Some(&text[..find!(text, b" could not").unwrap_or(0)]);
        return Some(x);
    }
    if other && has!(text, b"no resolver defined to resolve") {
        return Some(f("nginx.no_resolver", Dns, Phase::Resolve).detail("no resolver configured"));
    }
    if other && has!(text, b"host not found in upstream") {
        return Some(
            f("nginx.host_not_found_at_startup", Dns, Phase::Resolve)
                .detail("name not found at startup")
                .role(Role::Event),
        );
    }
    if other && has!(text, b"worker_connections are not enough") {
        return Some(
            f("nginx.worker_connections", LocalExhausted, Phase::Connect)
                .detail("worker_connections exhausted"),
        );
    }
    if other && (has!(text, b"Too many open files") || has!(text, b"No file descriptors available"))
    {
        return Some(
            f("nginx.too_many_open_files", LocalExhausted, Phase::Connect)
                .detail("file descriptors exhausted"),
        );
    }
    if may(Lead::Client) && has!(text, b"client intended to send too large") {
        return Some(
            f("nginx.client_body_too_large", ClientInvalid, Phase::Client)
                .detail("request body too large"),
        );
    }
    if may(Lead::Client) && has!(text, b"client sent") {
        return Some(
            f("nginx.client_invalid", ClientInvalid, Phase::Client).detail("malformed request"),
        );
    }
    if may(Lead::Client) && has!(text, b"client timed out") {
        return Some(
            f("nginx.client_timeout", ClientInvalid, Phase::Client).detail("request too slow"),
        );
    }
    if may(Lead::Client)
        && (has!(text, b"client prematurely closed connection")
            || has!(text, b"client closed connection"))
    {
        return Some(f("nginx.client_closed", ClientAborted, Phase::Client));
    }
    if other
        && (has!(text, b"limiting requests, excess") || has!(text, b"limiting connections by zone"))
    {
        return Some(f("nginx.limit_req", RateLimited, Phase::Client));
    }
    if other && has!(text, b"access forbidden by rule") {
        return Some(f("nginx.access_forbidden", Denied, Phase::Client));
    }
    None
}

fn connect_error(err: &[u8], unix: bool) -> Option<(&'static str, Cause, &'static str)> {
    use Cause::*;
    // `err` is exactly the C library's strerror text, so comparisons need no search.
    let is = |s: &[u8]| err == s;
    Some(if unix && is(b"No such file or directory") {
        ("nginx.unix_socket_missing", Refused, "unix socket missing")
    } else if unix && is(b"Permission denied") {
        (
            "nginx.unix_socket_permission",
            Refused,
            "unix socket permission denied",
        )
    } else if unix && (is(b"Resource temporarily unavailable") || is(b"Operation would block")) {
        (
            "nginx.unix_socket_backlog_full",
            Refused,
            "unix socket backlog full",
        )
    } else if is(b"Connection refused") {
        if unix {
            (
                "nginx.unix_socket_refused",
                Refused,
                "unix socket: nothing listening",
            )
        } else {
            ("nginx.connect_refused", Refused, "connection refused")
        }
    } else if err.ends_with(b"timed out") {
        ("nginx.connect_timeout", Timeout, "connect timed out")
    } else if is(b"No route to host") || err.ends_with(b"unreachable") || is(b"Host is down") {
        ("nginx.connect_unreachable", Unreachable, "no route")
    } else if is(b"Cannot assign requested address") || is(b"Address not available") {
        (
            "nginx.connect_no_ephemeral_port",
            LocalExhausted,
            "no free local port",
        )
    } else if is(b"Connection reset by peer") {
        ("nginx.connect_reset", Reset, "reset while connecting")
    } else if is(b"Too many open files") {
        (
            "nginx.too_many_open_files",
            LocalExhausted,
            "file descriptors exhausted",
        )
    } else {
        return None;
    })
}

fn dns_detail(err: &[u8]) -> &'static str {
    if has!(err, b"Host not found") || has!(err, b"not found") {
        "name not found"
    } else if has!(err, b"timed out") {
        "resolver timed out"
    } else if has!(err, b"Server failure") {
        "resolver server failure"
    } else {
        "resolution failed"
    }
}

/// PHP-FPM's stderr as nginx relays it: the application's doing, not the gateway's.
fn relayed(text: &[u8]) -> Option<&'static str> {
    if !has!(text, b"FastCGI sent in stderr") {
        return None;
    }
    Some(
        if has!(text, b"Primary script unknown") || has!(text, b"Unable to open primary") {
            "php-fpm: primary script unknown (404)"
        } else if has!(text, b"has been denied (see security.limit_extensions)") {
            "php-fpm: script extension denied (403)"
        } else if has!(text, b"PHP Fatal error") {
            "php fatal error (500)"
        } else {
            "php-fpm stderr message"
        },
    )
}
